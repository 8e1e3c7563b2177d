"""The forgetting check: a base model's general reference set, without and with the adapter.

At the end of a job the mean loss per assistant token of the reference set (tokenized and masked
exactly as training data is) is taken under the base model (the adapter switched off) and under the
fine-tuned model; a rise past the base model's threshold suggests it lost general ability.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from service.settings import BaseModelConfig
from trainer.batching import evaluate
from trainer.chat_masks import TokenizedExample
from trainer.dataset import DatasetError, prepare_file
from trainer.placement import load_tokenizer

log = logging.getLogger("openft.forgetting")
ADVICE = (
    "the model may have lost general ability; consider a lower learning_rate_multiplier or "
    "fewer epochs"
)


@dataclass(frozen=True)
class ForgettingCheck:
    """What the job's ``openft.forgetting`` field says."""

    reference_examples: int
    base_loss: float
    fine_tuned_loss: float
    threshold: float

    @property
    def relative_increase(self) -> float:
        """The loss's rise as a share of the base model's (negative when it fell)."""
        return (self.fine_tuned_loss - self.base_loss) / self.base_loss if self.base_loss else 0.0

    @property
    def warning(self) -> bool:
        return self.relative_increase > self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "relative_increase": self.relative_increase,
            "warning": self.warning,
        }

    def events(self) -> list[tuple[str, str]]:
        """(level, message) of the job's events: an info, and a warn past the threshold."""
        summary = (
            f"Forgetting check on the {self.reference_examples}-example reference set: loss "
            f"{self.base_loss:.2f} → {self.fine_tuned_loss:.2f} "
            f"({self.relative_increase:+.1%}) under the fine-tuned model"
        )
        found = [("info", summary)]
        if self.warning:
            found.append(
                (
                    "warn",
                    f"The reference-set loss rose by {self.relative_increase:.1%}, more than the "
                    f"{self.threshold * 100:g}% this base model allows: {ADVICE}",
                )
            )
        return found


def forgetting_check(
    base: BaseModelConfig, model: PeftModel, tokens_per_forward: int
) -> ForgettingCheck | None:
    """The check of ``model``, the job's trained adapter on its base as training left it loaded;
    None when the base model has no usable reference set. It only advises: a problem with the
    operator's file is logged, never failed."""
    if base.reference_file is None:
        return None
    try:
        data = Path(base.reference_file).read_bytes()  # a small set, by design
        examples = reference_examples(data, base, load_tokenizer(base))
    except (OSError, DatasetError) as exc:
        log.warning("no forgetting check for %s (%s): %s", base.name, base.reference_file, exc)
        return None
    return measure(base, model, examples, tokens_per_forward)


def reference_examples(
    data: bytes, base: BaseModelConfig, tokenizer: PreTrainedTokenizerBase
) -> list[TokenizedExample]:
    """The reference file as training examples, checked and tokenized as a training file is."""
    prepared = prepare_file(
        [data],
        tokenizer,
        file_id=Path(base.reference_file or "").name,
        method="supervised",
        max_length=base.max_seq_length,
        param="reference_file",
    )
    return [e for e in prepared.examples if isinstance(e, TokenizedExample)]


def measure(
    base: BaseModelConfig,
    model: PeftModel,
    examples: list[TokenizedExample],
    tokens_per_forward: int,
) -> ForgettingCheck:
    """The mean loss per assistant token of ``examples`` under the base model (the adapter
    switched off, as DPO's reference is) and under the adapter. Both run on the model as it was
    trained (same device, precision and quantization), so only the adapter differs."""
    with model.disable_adapter():
        base_loss = evaluate(model, examples, tokens_per_forward).loss
    fine_tuned_loss = evaluate(model, examples, tokens_per_forward).loss
    return ForgettingCheck(
        len(examples), base_loss, fine_tuned_loss, base.forgetting_warn_relative_increase
    )
