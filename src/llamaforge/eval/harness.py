"""lm-evaluation-harness bridge: our model as the lm_eval model `llamaforge`, and an offline runner.

`LlamaforgeLM` subclasses lm_eval's `TemplateLM`, so the (context, continuation) split and the
empty-context rule are lm_eval's own; scoring goes through `eval.likelihood.LikelihoodScorer`.
With the BOS token added (as `hf` with `add_bos_token=True`) its loglikelihoods equal lm_eval's
`hf` model on the same weights exported with `save_model(format="hf")` (tests/eval/test_harness.py).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM, TemplateLM
from lm_eval.api.registry import register_model

from llamaforge.errors import UserError
from llamaforge.eval.generation import GenerateFn, GenSettings, cut_at_stop
from llamaforge.eval.likelihood import LikelihoodScorer
from llamaforge.eval.task_data import check_task_data

TASKS_DIR = Path(__file__).resolve().parents[3] / "configs" / "eval" / "tasks"


def _bool(v: Any) -> bool:
    return v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes", "on")


@register_model("llamaforge")
class LlamaforgeLM(TemplateLM):
    """model_args: path=DIR[,dtype=float32][,device=cpu][,batch_size=16][,max_length=N][,chat=false]."""

    def __init__(self, path: str | None = None, model=None, tokenizer=None, batch_size: int | str = 16,
                 device: str | None = None, dtype: str | None = None, max_length: int | None = None,
                 chat: bool | str = False, generate_fn: GenerateFn | None = None, max_gen_toks: int = 256,
                 **_ignored: Any):
        super().__init__()
        if model is None:
            if path is None:
                raise UserError("the llamaforge lm_eval model needs model_args path=CHECKPOINT_DIR")
            from llamaforge.checkpoint import find_tokenizer, load_model

            model = load_model(path, device=device or "cpu", dtype=dtype)
            tokenizer = tokenizer or find_tokenizer(path)
            if tokenizer is None:
                raise UserError(f"{path}: no tokenizer.model beside the checkpoint")
        bs = 16 if str(batch_size).startswith("auto") else int(batch_size)
        self.scorer = LikelihoodScorer(model, tokenizer, batch_size=bs,
                                       max_length=int(max_length) if max_length else None)
        self.model, self.tok = model, tokenizer
        self.chat = _bool(chat)
        self.max_gen_toks = int(max_gen_toks)
        self._generate_fn = generate_fn

    # -- TemplateLM hooks -------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tok.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self.tok.bos_id

    @property
    def max_length(self) -> int:
        return self.scorer.max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self.tok.encode(string, bos=add_special_tokens is not False, eos=False)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        results = self.scorer.score_tokens([(ctx, cont) for _, ctx, cont in requests])
        for (key, _, _), res in zip(requests, results, strict=True):
            self.cache_hook.add_partial("loglikelihood", key, res)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-document log-likelihood in disjoint windows of max_length, every token after BOS scored."""
        texts = [req.args[0] for req in requests]
        out = [ll for ll, _ in self.scorer.rolling(texts)]
        for text, ll in zip(texts, out, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), ll)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        groups: dict[str, list[int]] = {}
        settings: dict[str, GenSettings] = {}
        for i, req in enumerate(requests):
            kw = dict(req.args[1] or {})
            until = kw.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            sample = _bool(kw.get("do_sample", False)) and float(kw.get("temperature", 1.0) or 0) > 0
            # At most half the context for new tokens, so that a prompt always has room.
            s = GenSettings(max_new_tokens=min(int(kw.get("max_gen_toks", self.max_gen_toks)), self.max_length // 2),
                            temperature=float(kw.get("temperature", 1.0)) if sample else 0.0,
                            top_p=float(kw.get("top_p", 1.0) or 1.0) if sample else 1.0,
                            stop=until, batch_size=self.scorer.batch_size)
            key = repr(sorted(vars(s).items()))
            settings[key] = s
            groups.setdefault(key, []).append(i)
        out: list[str] = [""] * len(requests)
        gen = self._generate_fn
        if gen is None:
            from llamaforge.eval.generation import model_generate_fn

            gen = self._generate_fn = model_generate_fn(self.model, self.tok)
        for key, idx in groups.items():
            s = settings[key]
            texts = gen([self._fit(requests[i].args[0], s.max_new_tokens) for i in idx], s)
            for i, t in zip(idx, texts, strict=True):
                out[i] = cut_at_stop(t, s.stop)
                self.cache_hook.add_partial("generate_until", requests[i].args, out[i])
        return out

    def _fit(self, context: str, max_new_tokens: int) -> str:
        """Keep the end of a context that would not leave room for max_new_tokens (as lm_eval's hf model)."""
        ids = self.tok.encode(context, bos=False)
        room = self.max_length - max_new_tokens - 1  # 1 for BOS
        return context if len(ids) <= room else self.tok.decode(ids[-room:])

    # -- chat -----------------------------------------------------------------------------------
    @property
    def tokenizer_name(self) -> str:
        return "llamaforge-sentencepiece"

    def chat_template(self, chat_template: bool | str = False) -> str:
        return "llama2" if self.chat else ""

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Llama 2 chat text: `[INST] <<SYS>>..<</SYS>> user [/INST] answer </s><s>[INST] ...`.

        The first `<s>` is the BOS token that tok_encode adds; later `</s><s>` are written as text.
        """
        from llamaforge.tokenizer import B_INST, B_SYS, E_INST, E_SYS

        msgs = list(chat_history)
        system = msgs.pop(0)["content"] if msgs and msgs[0]["role"] == "system" else None
        parts: list[str] = []
        for j, m in enumerate(msgs):
            if m["role"] == "user":
                user = m["content"].strip()
                if system is not None and not parts:
                    user = f"{B_SYS}{system.strip()}{E_SYS}{user}"
                parts.append(("" if not parts else "<s>") + f"{B_INST} {user} {E_INST}")
            else:
                parts.append(f" {m['content'].strip()} " + ("</s>" if j + 1 < len(msgs) else ""))
        return "".join(parts)


def prepare_tasks(include_path: str | Path | None, data_dir: str | Path | None) -> Path:
    """Copy a task directory (default: the shipped configs/eval/tasks) into a temp dir, with relative
    `data_files` paths resolved against `data_dir` (datasets would read them relative to the cwd)."""
    src = Path(include_path) if include_path else TASKS_DIR
    if not src.is_dir():
        raise UserError(f"--include-path {src}: not a directory of lm_eval task YAMLs")
    base = Path(data_dir).resolve() if data_dir else src.resolve()
    dst = Path(tempfile.mkdtemp(prefix="llamaforge-tasks-"))
    shutil.copytree(src, dst, dirs_exist_ok=True)
    pattern = re.compile(r"^(\s*(?:test|validation|train|dev)\s*:\s*)([^\s#{}\[\]]+\.(?:jsonl|json|csv)\S*)\s*$")
    for y in list(dst.rglob("*.yaml")):
        lines = []
        for line in y.read_text().splitlines():
            m = pattern.match(line)
            if m and not Path(m.group(2)).is_absolute():
                line = f"{m.group(1)}{base / m.group(2)}"
            lines.append(line)
        y.write_text("\n".join(lines) + "\n")
    return dst


def run_harness(lm: LM, tasks: list[str], include_path: str | Path | None = None,
                data_dir: str | Path | None = None, num_fewshot: int | None = None, limit: int | None = None,
                apply_chat_template: bool = False, log_samples: bool = False,
                allow_code_execution: bool = False, bootstrap_iters: int = 0) -> dict:
    """lm_eval.simple_evaluate offline on local task YAMLs (any lm_eval LM); returns lm_eval's results dict."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    task_dir = prepare_tasks(include_path, data_dir)
    try:
        check_task_data(task_dir, tasks)
        tm = TaskManager(include_path=str(task_dir), include_defaults=False)
        unknown = [t for t in tasks if t not in tm.all_tasks]
        if unknown:
            raise UserError(f"unknown task(s) {', '.join(unknown)}; tasks in {include_path or TASKS_DIR}: "
                            f"{', '.join(sorted(tm.all_tasks)) or '(none)'}")
        return lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=tm, num_fewshot=num_fewshot,
                                       limit=limit, apply_chat_template=apply_chat_template,
                                       log_samples=log_samples, bootstrap_iters=bootstrap_iters,
                                       confirm_run_unsafe_code=allow_code_execution)
    finally:
        shutil.rmtree(task_dir, ignore_errors=True)
