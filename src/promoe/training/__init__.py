"""Training: meta-training of one model (trainer), the optimizer step shared by every training (loop), few-shot fine-tuning on a test task's demonstrations (fewshot)."""
