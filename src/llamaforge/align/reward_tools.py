"""Reward-model tools around training: scoring records, sampling answer pairs for annotation (the
Llama 2 protocol: two answers from different checkpoints / temperatures, rated on four levels and
tagged for safety), a self-contained HTML annotation page, and importers (ours, HH-RLHF, SHP)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llamaforge.data.chat import RATINGS, read_jsonl
from llamaforge.errors import UserError
from llamaforge.io import atomic_file
from llamaforge.tokenizer import validate_dialog


def write_jsonl(path: str | Path, records: list[dict[str, Any]]) -> None:
    with atomic_file(path) as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def record_prompt(rec: dict[str, Any], where: str) -> str | list[dict]:
    if "messages" in rec:
        msgs = validate_dialog(rec["messages"], where)
        if msgs[-1]["role"] != "user":
            raise UserError(f"{where}: 'messages' must end with the user turn being answered")
        return msgs
    if isinstance(rec.get("prompt"), str) and rec["prompt"].strip():
        if rec.get("system"):
            return [{"role": "system", "content": rec["system"]}, {"role": "user", "content": rec["prompt"]}]
        return rec["prompt"]
    raise UserError(f"{where}: a record needs 'prompt' (non-empty string) or 'messages'")


def score_file(rm, in_path: str | Path, out_path: str | Path, batch_size: int = 16) -> int:
    """Add `score` to every record with prompt/messages and answer; batched; written atomically."""
    recs, prompts, answers = [], [], []
    for n, rec in read_jsonl(in_path):
        where = f"{in_path}:{n}"
        if not isinstance(rec.get("answer"), str):
            raise UserError(f"{where}: field 'answer' (a string) is missing")
        prompts.append(record_prompt(rec, where))
        answers.append(rec["answer"])
        recs.append(rec)
    scores = rm.score(prompts, answers, batch_size=batch_size).tolist() if recs else []
    for r, s in zip(recs, scores):
        r["score"] = s
    write_jsonl(out_path, recs)
    return len(recs)


# -- sampling pairs for annotation -----------------------------------------------------------------
def sample_pairs(models: list[tuple[str, Any, Any]], prompts: list[dict[str, Any]], temperatures: list[float],
                 seed: int = 0, max_new_tokens: int = 128) -> list[dict[str, Any]]:
    """Two answers per prompt from (model, temperature) variants: A uses the first variant, B the
    second (different checkpoints and/or temperatures, the paper's source of diversity)."""
    from llamaforge.generate import generate

    variants = [(name, m, tok, t) for (name, m, tok) in models for t in temperatures]
    if len(variants) < 2:
        raise UserError("need two variants: give two --models or two --temperatures")
    a, b = variants[0], variants[-1] if len(models) > 1 else variants[1]
    chat = [p["_prompt"] for p in prompts]
    outs = []
    for k, (_name, m, tok, t) in enumerate((a, b)):
        outs.append(generate(m, tok, chat, max_new_tokens=max_new_tokens, temperature=t, top_p=0.9,
                             seed=seed + 1000 * k))
    tasks = []
    for i, p in enumerate(prompts):
        rec = {k: v for k, v in p.items() if k != "_prompt"}
        rec.update({"id": p.get("id", f"task-{i:06d}"), "answer_a": outs[0][i].strip(), "answer_b": outs[1][i].strip(),
                    "source_a": {"model": a[0], "temperature": a[3]}, "source_b": {"model": b[0], "temperature": b[3]}})
        tasks.append(rec)
    return tasks


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>llamaforge preference annotation</title>
<style>
body{font-family:system-ui,sans-serif;max-width:60em;margin:1em auto;padding:0 1em}
.task{border:1px solid #ccc;border-radius:6px;padding:1em;margin:1em 0}
.answers{display:grid;grid-template-columns:1fr 1fr;gap:1em}
pre{white-space:pre-wrap;background:#f6f6f6;padding:.5em;border-radius:4px}
.done{border-color:#4a4}
</style></head><body>
<h1>Which answer is better?</h1>
<p>For each prompt pick the better answer, say how much better it is, and tick <em>unsafe</em> if the
prompt or either answer raises a safety concern. Then press <b>Download</b>: the file is what
<code>llamaforge reward import --in FILE --out prefs.jsonl</code> reads.</p>
<p id="progress"></p>
<div id="tasks"></div>
<button id="download">Download</button>
<script id="data" type="application/json">__TASKS__</script>
<script>
const RATINGS = __RATINGS__;
const tasks = JSON.parse(document.getElementById('data').textContent);
const root = document.getElementById('tasks');
function esc(s){const d=document.createElement('div');d.textContent=s;return d.innerHTML;}
function promptText(t){ if (t.messages) return t.messages.map(m=>m.role+': '+m.content).join('\\n'); return t.prompt; }
function progress(){const n=tasks.filter(t=>t.choice).length;
  document.getElementById('progress').textContent = n + ' of ' + tasks.length + ' rated';}
tasks.forEach((t,i)=>{
  const div=document.createElement('div'); div.className='task'; div.id='task-'+i;
  div.innerHTML = '<b>Prompt</b><pre>'+esc(promptText(t))+'</pre><div class="answers">'
    + ['a','b'].map(k=>'<label><input type="radio" name="choice-'+i+'" value="'+k+'"> Answer '
      + k.toUpperCase()+'<pre>'+esc(t['answer_'+k])+'</pre></label>').join('') + '</div>'
    + '<label>How much better: <select name="rating-'+i+'">'
    + RATINGS.map(r=>'<option value="'+r+'">'+r.replace('_',' ')+'</option>').join('')
    + '</select></label> <label><input type="checkbox" name="safety-'+i+'"> unsafe</label>';
  root.appendChild(div);
  div.addEventListener('change',()=>{
    const c=div.querySelector('input[name=choice-'+i+']:checked');
    t.choice = c ? c.value : undefined;
    t.rating = div.querySelector('select').value;
    t.safety = div.querySelector('input[type=checkbox]').checked;
    div.classList.toggle('done', !!t.choice); progress();
  });
});
progress();
document.getElementById('download').addEventListener('click',()=>{
  const lines = tasks.filter(t=>t.choice).map(t=>JSON.stringify(t)).join('\\n') + '\\n';
  const a=document.createElement('a');
  a.href=URL.createObjectURL(new Blob([lines],{type:'application/jsonl'}));
  a.download='rated.jsonl'; document.body.appendChild(a); a.click();
});
</script></body></html>
"""


def annotation_page(tasks: list[dict[str, Any]]) -> str:
    data = json.dumps(tasks, ensure_ascii=False).replace("</", "<\\/")
    return _PAGE.replace("__TASKS__", data).replace("__RATINGS__", json.dumps(list(RATINGS)))


# -- importers --------------------------------------------------------------------------------------
def import_rated(path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """Rated annotation tasks (answer_a, answer_b, choice a|b, rating, safety) -> training pairs."""
    out, skipped = [], 0
    for n, rec in read_jsonl(path):
        where = f"{path}:{n}"
        choice = rec.get("choice")
        if choice in (None, "", "tie"):
            skipped += 1
            continue
        if choice not in ("a", "b"):
            raise UserError(f"{where}: field 'choice' must be 'a' or 'b', got {choice!r}")
        for k in ("answer_a", "answer_b"):
            if not isinstance(rec.get(k), str) or not rec[k].strip():
                raise UserError(f"{where}: field {k!r} must be a non-empty string")
        rating = rec.get("rating")
        if rating not in RATINGS:
            raise UserError(f"{where}: rating {rating!r} is not one of {', '.join(RATINGS)}")
        prompt = record_prompt(rec, where)
        pair = {"chosen": rec[f"answer_{choice}"], "rejected": rec["answer_b" if choice == "a" else "answer_a"],
                "rating": rating, "safety": bool(rec.get("safety", False))}
        pair.update({"messages": prompt} if isinstance(prompt, list) else {"prompt": prompt})
        out.append(pair)
    return out, skipped


_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def parse_hh(text: str, where: str) -> list[dict[str, str]]:
    parts = _HH_TURN.split("\n\n" + text.lstrip("\n") if not text.startswith("\n\n") else text)
    msgs = []
    for role, content in zip(parts[1::2], parts[2::2]):
        msgs.append({"role": "user" if role == "Human" else "assistant", "content": content.strip()})
    if not msgs or msgs[-1]["role"] != "assistant":
        raise UserError(f"{where}: not in HH-RLHF format (expected '\\n\\nHuman: ... \\n\\nAssistant: ...')")
    return msgs


def import_hh(path: str | Path) -> Iterator[dict[str, Any]]:
    """Anthropic HH-RLHF ({chosen, rejected} transcripts sharing a prefix). HH has no strength of
    preference: pairs get rating `better` with margin 0 (no margin without a rating)."""
    for n, rec in read_jsonl(path):
        where = f"{path}:{n}"
        if not isinstance(rec.get("chosen"), str) or not isinstance(rec.get("rejected"), str):
            raise UserError(f"{where}: HH-RLHF records need string fields 'chosen' and 'rejected'")
        c, r = parse_hh(rec["chosen"], where), parse_hh(rec["rejected"], where)
        if c[:-1] != r[:-1]:
            raise UserError(f"{where}: 'chosen' and 'rejected' do not share the same dialogue before the last answer")
        if not c[-1]["content"] or not r[-1]["content"]:
            continue
        yield {"messages": c[:-1], "chosen": c[-1]["content"], "rejected": r[-1]["content"], "rating": "better",
               "margin": 0.0}


def shp_rating(score_ratio: float) -> str:
    """Stanford SHP's score ratio (upvotes of preferred / other) as one of the four levels."""
    if score_ratio >= 10:
        return "significantly_better"
    if score_ratio >= 3:
        return "better"
    if score_ratio >= 1.5:
        return "slightly_better"
    return "negligibly_better"


def import_shp(path: str | Path) -> Iterator[dict[str, Any]]:
    """Stanford SHP (history, human_ref_A, human_ref_B, labels (1: A preferred), score_ratio)."""
    for n, rec in read_jsonl(path):
        where = f"{path}:{n}"
        for k in ("history", "human_ref_A", "human_ref_B", "labels"):
            if k not in rec:
                raise UserError(f"{where}: SHP field {k!r} is missing")
        a_wins = int(rec["labels"]) == 1
        yield {"prompt": rec["history"], "chosen": rec["human_ref_A"] if a_wins else rec["human_ref_B"],
               "rejected": rec["human_ref_B"] if a_wins else rec["human_ref_A"],
               "rating": shp_rating(float(rec.get("score_ratio", 1.0)))}
