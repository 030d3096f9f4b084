"""Scale-out: Ray workers for one batch over many processes and machines, and resumable headless sweeps."""
