"""``openft models export`` and ``openft models import``: fine-tuned models as PEFT folders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from service.blobstore import open_blob_store
from service.console import err, exit_on_error
from service.db.database import Database
from service.models.transfer import ModelTransfer
from service.settings import Settings


def register(models_app: typer.Typer, prepared_database: Callable[[Settings], Database]) -> None:
    """Add the commands to ``openft models``; ``prepared_database`` opens a migrated database."""

    def transfer() -> ModelTransfer:
        settings = Settings()
        database = prepared_database(settings)
        return ModelTransfer(settings, database, open_blob_store(settings))

    @models_app.command("export")
    def models_export(
        model: Annotated[str, typer.Argument(help="A fine-tuned model or checkpoint (ft:...).")],
        folder: Annotated[Path, typer.Argument(help="A new (or empty) folder to write.")],
        merged: Annotated[
            bool, typer.Option(help="Write full weights with the adapter merged in.")
        ] = False,
    ) -> None:
        """Write a fine-tuned model as a PEFT adapter folder, or merged full weights.

        The folder holds adapter_config.json and adapter_model.safetensors, for
        PeftModel.from_pretrained(base, FOLDER); with --merged, the base model's weights with the
        adapter merged in and its tokenizer, for AutoModelForCausalLM.from_pretrained(FOLDER)
        (needs the ML stack).
        """
        with exit_on_error():
            transfer().export(model, folder, merged=merged)
        err.print(f"Exported {model} to {folder}{' (merged weights)' if merged else ''}.")

    @models_app.command("import")
    def models_import(
        folder: Annotated[Path, typer.Argument(help="A PEFT LoRA adapter folder.")],
        project: Annotated[str, typer.Option(help="The project (slug) that gets the model.")],
        base: Annotated[
            str | None,
            typer.Option(help="Its base model; default: the one its adapter_config.json names."),
        ] = None,
        suffix: Annotated[str | None, typer.Option(help="Goes into the model's name.")] = None,
    ) -> None:
        """Make an outside PEFT LoRA adapter an ft: model of a project, served like a trained one.

        The adapter must fit what vLLM serves (LoRA on linear layers of the base model, rank at
        most OPENFT_VLLM_MAX_LORA_RANK, no modules_to_save, DoRA or bias). It appears as a
        fine-tuning job that is already succeeded, with no training file ("") and an event
        saying it was imported: that job is what lists, serves and deletes the model. Prints the
        model's name. Needs the ML stack (the adapter is checked against the base model).
        """
        with exit_on_error():
            imported = transfer().import_adapter(
                folder, project_slug=project, base=base, suffix=suffix
            )
        err.print(f"Imported {folder} into project '{project}' (job {imported.job_id}):")
        print(imported.name, flush=True)
