"""The student: a small causal LM that is instruction-tuned on teacher answers."""
