"""The worker process: arq settings, the job run, the ComfyUI pool, recovery and retention."""
