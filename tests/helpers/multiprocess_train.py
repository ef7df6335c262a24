"""Launched by tests/test_training_multiprocess.py with `accelerate launch --num_processes N --cpu`
(or plain python for the single-process reference): SFT on a tiny model with a fixed batch.

    python multiprocess_train.py OUT_DIR STEPS [STOP_AT]

STOP_AT stops the run early (an interruption: the schedule is still built for STEPS); running again
without it resumes from the checkpoint. Every example has the same token count, so a rank's mean loss
over its half of the batch averages (DDP) to exactly the single-process mean over the whole batch.
"""

import sys

import torch

from ifprune.core.tiny import tiny_lm
from ifprune.training.config import config_from_dict
from ifprune.training.data_sft import SFTExample
from ifprune.training.loop import Trainer

out, steps = sys.argv[1], int(sys.argv[2])
stop_at = int(sys.argv[3]) if len(sys.argv) > 3 else None
examples = [SFTExample("math", f"add {a} and {b}", f"{a + b}") for a in range(5) for b in range(5)]
cfg = config_from_dict(dict(stage="sft", method="predictor", keep=0.5, llm="lora", lora_r=4, lr_predictor=1e-2,
                            lr_llm=1e-2, warmup_steps=0, steps=steps, batch_size=4, prior="griffin", prior_prompts=8,
                            checkpoint_every=2, progress=False, bf16=False, output_dir=out,
                            data={"max_seq_len": 64, "max_prompt_tokens": 32, "group_by_length": False}))
torch.manual_seed(0)
trainer = Trainer(cfg, lm=tiny_lm("llama", d_ffn=48), sft_data=examples)
if stop_at is not None:
    trainer.cfg.steps = stop_at
summary = trainer.run()
print("RANK", trainer.acc.process_index, "OF", trainer.acc.num_processes, "STEPS", summary["steps"], flush=True)
