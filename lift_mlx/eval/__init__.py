"""Evaluation: the same questions answered by each arm, scored offline and summarised.

arms.py      the arms, one entry each: its adapter, whether its prompt holds the document
command.py   `lift-mlx eval`: its options, the set and model it loads, the table it prints
run.py       run_eval: every question of a set answered in every arm, recorded as it goes
summary.py   the records summarised per arm and question type, and printed as a table
datasets.py  LooGLE, LongBench and native evaluation sets
niah.py      needle-in-a-haystack documents
metrics.py   F1, exact match, containment, ROUGE-L, keyword and choice scores
judge.py     a local model's True/False verdicts on the answers
records.py   the JSONL records evaluation and judge append to
"""
