"""Teachers: chat messages in, text and token usage out, through one disk cache and one budget.

base.py           the interface, the cache, the budget, the dry-run estimate; make_teacher picks a backend
hf.py             a local transformers chat model (batched generation, per-request seeds)
openai_compat.py  any OpenAI-compatible endpoint (the openai client, retries with backoff, a thread pool)
"""
