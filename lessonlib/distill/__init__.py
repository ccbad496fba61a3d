"""Knowledge distillation: losses (Hinton et al. 2015), students (DistilBERT init), a resumable training loop."""
from .losses import (FeatureDistiller, attention_distillation_loss, distillation_loss, hidden_state_loss,  # noqa: F401
                     kd_kl, softened_entropy)
from .students import student_by_layers, student_from_config  # noqa: F401
from .train import DistillConfig, DistillResult, distill, ensemble_logits  # noqa: F401
