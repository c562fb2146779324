"""One module per engine: spec + weights -> that engine's native model files.

Each module has a `CONVERTERS` registry (one decorated function per layer type) and a
`build(net, weights, outdir, options) -> dict` that writes the files and returns metadata
for the manifest. Engines are imported inside the functions, never at module import.
"""
