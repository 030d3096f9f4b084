"""The pure core: what a batch is (spec, seeds), how it runs (engine), what it made (item, result) and its grids."""
