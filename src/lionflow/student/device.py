"""The job's own device, from one setting (`student.device`): training, student answers and lm-eval."""
import os
import resource

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


def peak_memory(device: str) -> dict:
    """This process's peak resident memory (VmHWM) and, on a GPU, torch's peak allocated memory, in MiB."""
    rss_kib = None
    if os.path.exists("/proc/self/status"):
        with open("/proc/self/status") as f:
            rss_kib = next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), None)
    if rss_kib is None:  # not Linux: getrusage (KiB on Linux, bytes on macOS)
        rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return {"peak_rss_mib": round(rss_kib / 1024, 1), "peak_gpu_memory_mib": None if gpu is None else round(gpu, 1)}
