"""Sub-commands of the ``levelset-rcnn`` command line, one module each."""
