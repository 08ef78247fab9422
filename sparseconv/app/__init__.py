"""The application layer: the ``sparseconv`` command (:mod:`.cli` parses, :mod:`.commands`
runs each subcommand), the demo job (:mod:`.demo`) and the dense-twin self-check
(:mod:`.checks`).

It is thin on purpose: what a command does to one file is a library function
(:func:`sparseconv.io.describe_scan` for ``info``, :func:`sparseconv.data.convert.voxelize_file`
for ``voxelize``); this layer parses arguments, plans where outputs go and refuses unsafe
ones (:mod:`.outputs`), prints, and maps errors to exit codes. Nothing in the library
imports it.
"""
