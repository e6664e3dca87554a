"""Helpers for the shipped lm-eval task YAMLs (public formats of the original releases)."""

import re


def arc_process_docs(dataset):
    """AI2 ARC JSONL: {"question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}."""

    def one(doc):
        labels = [c["label"] for c in doc["question"]["choices"]]
        return {"query": f"Question: {doc['question']['stem']}\nAnswer:",
                "choices": [c["text"] for c in doc["question"]["choices"]],
                "gold": labels.index(doc["answerKey"])}

    return dataset.map(one, remove_columns=dataset.column_names)


def _hs_clean(text):
    # As lm-eval's hellaswag: brackets are artifacts of the WikiHow part.
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag_process_docs(dataset):
    """HellaSwag JSONL (hellaswag_val.jsonl): activity_label, ctx_a, ctx_b, endings, label."""

    def one(doc):
        ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
        return {"query": _hs_clean(doc["activity_label"] + ": " + ctx),
                "choices": [_hs_clean(e) for e in doc["endings"]], "gold": int(doc["label"])}

    return dataset.map(one, remove_columns=dataset.column_names)


def humaneval_programs(resps, docs):
    """Keep every sample (pass@k needs all n), each with its prompt in front."""
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]


def humaneval_results(doc, results):
    """pass@k for this problem: programs run in llamaforge's sandbox (subprocess, timeout, no network)."""
    from llamaforge.eval.humaneval import humaneval_program, pass_at_k, run_program

    programs = results[0]  # each already starts with the prompt (humaneval_programs)
    c = sum(run_program(humaneval_program("", p, doc["test"], doc["entry_point"])).passed for p in programs)
    return {f"pass@{k}": pass_at_k(len(programs), c, k) for k in (1, 10, 100) if k <= len(programs)}
