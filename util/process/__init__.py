"""Process plumbing: devices, threads and the CPU allocator, torchrun/DDP helpers, and launching several
processes on one machine."""
