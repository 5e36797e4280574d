"""The job's own device, from one setting (`student.device`): training, student answers and lm-eval."""
import os

import torch


def resolve_device(spec: str = "auto") -> str:
    """auto -> cuda when the job has a GPU, else cpu; cpu / cuda / cuda:N as asked (cuda without a GPU is an error)."""
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"student.device is {spec!r} but this job sees no GPU (CUDA_VISIBLE_DEVICES="
                           f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}); use 'auto' or 'cpu'")
    return spec


def default_dtype(device: str) -> str:
    """bfloat16 on a GPU, float32 on the CPU."""
    return "bfloat16" if device.startswith("cuda") else "float32"
