"""Running the studies at scale: meta-device models from real configs, memory / FLOP plans, sharded evaluation.

Everything here drives PyTorch's own distributed stack through accelerate (``accelerate launch`` / torchrun, DDP,
FSDP); unforget starts no processes of its own.
"""
