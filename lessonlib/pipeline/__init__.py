"""The end-to-end compression pipeline (issue 9): recipes of stages, ``compress``, honest size accounting.

``compress(model, recipe)`` runs distillation, quantization, pruning, factorisation, sharing and entropy
coding stages in the order a recipe lists them (each stage calls the technique's own driver) and reports,
per stage, real bytes, perplexity / next-token accuracy, latency and time.  Scenario recipes live in
``lessonlib/pipeline/recipes/*.yaml`` (package data; ``load_recipe("cloud")`` finds them).
"""
from .budget import best_under_budget, recipe_bytes_estimate
from .cache import StageCache
from .core import PipelineReport, StageRecord, compress, pack_quantized, quality, speed
from .recipe import SCENARIOS, STAGES, Recipe, Stage, load_recipe, parse_nm, validate_recipe
from .size import SizeReport, WeightFormat, quant_layer_bytes, sparse_bytes, storage_report

__all__ = ["compress", "PipelineReport", "StageRecord", "quality", "speed", "pack_quantized", "Recipe", "Stage",
           "STAGES", "SCENARIOS", "load_recipe", "validate_recipe", "parse_nm", "SizeReport", "WeightFormat",
           "quant_layer_bytes", "sparse_bytes", "storage_report", "best_under_budget", "recipe_bytes_estimate", "StageCache"]
