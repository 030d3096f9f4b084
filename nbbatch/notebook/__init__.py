"""The notebook front ends: the ``%%batchgen`` magic and the ipywidgets panel."""
