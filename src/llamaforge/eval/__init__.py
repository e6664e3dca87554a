"""Evaluation: perplexity, the lm-evaluation-harness bridge, the safety and bias suite of the
papers, model-based comparison and red teaming. See docs/guide/eval.md."""
