"""Files: PNGs with A1111 parameters and the exact nbbatch record, the folder index, loading them back."""
