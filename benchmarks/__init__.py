"""Performance benchmarks: LoRA against full fine-tuning, PEFT and adapters; inference latency; mixed-adapter batches.

    python -m benchmarks.run          # the real models (SmolLM2-135M, MiniLM-L6, GPT-2 M random) -> results/bench
    python -m benchmarks.run --tiny   # tiny random models, 2 repeats: checks the harness end to end

`run.py` orchestrates and writes summary.json / summary.md; `jobs.py` holds the measurements, each run in a process
of its own; `common.py` the timing, memory and machine helpers. Numbers go to files, never into test asserts.
"""
