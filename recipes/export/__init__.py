"""The export stage: which checkpoint (by name, best by a streaming WER, or averaged), the checked ``.nemo``, the ONNX
export for sherpa-onnx with this project's exact onnxruntime decoder, and the results card of a run.

    python -m recipes.export run_dir=<run> ...        (conf/export.yaml, recipes/export/pipeline.py)
    python -m recipes.export.card run_dir=<run> ...   (conf/card.yaml)
"""
