"""The layer every stage uses: output folders and atomic writes (``outputs``), checked readers of JSON and
safetensors (``readers``), the checkpoint folder layout (``checkpoint``), JSON Lines records with skip counters
(``records``), WebDataset tar shards (``shards``), class-folder image sets (``class_folders``), the video
frame policies of training and evaluation (``frames``), packaged and hub models (``pretrained``), the metrics log
(``runlog``), the non-finite stop (``nonfinite``) and command-line value types (``argtypes``).

It lives in stage 1 because stage 1 is the root of the dependency chain (fewshot_eval -> flamingo_core ->
contrastive_encoder): every stage can import it without installing a fourth package.
"""
