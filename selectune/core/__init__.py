"""Shared LM plumbing, below every stage: settings, model loading, the batched scoring and generation engines,
the prompt templates, the content-addressed cache, LoRA training, metrics and plots. Imports no stage."""
