"""The audit config: YAML validated with pydantic, with errors that name the key to change."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from audit.errors import ConfigError

BUILTIN_DATASETS = ("digits", "breast_cancer", "resume_names")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class Normalization(_Strict):
    """Applied inside the adapter: the model sees (x - mean) / std, attacks work on raw x."""

    mean: list[float]
    std: list[float]

    @field_validator("std")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(s <= 0 for s in value):
            raise ValueError("every std must be > 0")
        return value


MODEL_SOURCES = ("factory", "torchscript", "onnx", "predict_fn", "huggingface")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ModelConfig(_Strict):
    """Exactly one of ``factory`` (+ optional ``weights``), ``torchscript``, ``onnx`` or ``predict_fn``."""

    factory: str | None = Field(None, description="import path 'package.module:callable' returning an nn.Module")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the factory")
    weights: Path | None = Field(None, description="state_dict file: torch.save (loaded with weights_only=True) or "
                                 ".safetensors (needs the 'safetensors' extra)")
    torchscript: Path | None = Field(None, description="a TorchScript file (torch.jit.save)")
    onnx: Path | None = Field(None, description="an ONNX file run by onnxruntime (needs the 'onnx' extra); its graph "
                              "is converted to torch for gradients when it converts (model.onnx_conversion)")
    onnx_conversion: Literal["auto", "off"] = Field(
        "auto", description="auto: convert the ONNX graph to torch (onnx2torch) and audit it as a white box when the "
        "converted module agrees with onnxruntime on the audit's inputs (onnxruntime still decides every prediction);"
        " off: a black box (score- and decision-based attacks only)")
    onnx_tolerance: float = Field(1e-3, gt=0, description="largest |converted - onnxruntime| output difference on the "
                                  "audit's inputs for the converted graph to be used")
    predict_fn: str | None = Field(
        None, description="black-box: import path of a function numpy array -> scores (N, classes); no gradients"
    )
    huggingface: Path | None = Field(
        None, description="text: a local directory saved with save_pretrained holding a transformers sequence "
        "classifier and, unless model.tokenizer names another, its tokenizer (needs the 'text' extra; nothing is "
        "downloaded)")
    tokenizer: Path | None = Field(
        None, description="text: a tokenizer directory (save_pretrained) or a tokenizers JSON file; a factory "
        "model given one takes token ids and an attention mask (docs/text.md)")
    max_length: int = Field(128, gt=1, description="text: tokens per text (longer texts are truncated)")
    embedding_layer: str | None = Field(
        None, description="text: dotted name of the token embedding module (default: a transformers model's input "
        "embeddings, or the model's only nn.Embedding); used by gradient-guided attacks and Layer IG")
    task: Literal["auto", "classification", "regression", "multilabel"] = Field(
        "auto", description="what the model predicts: class scores, one number, or independent 0/1 labels; auto: "
        "classification unless the target says otherwise unambiguously (docs/tasks.md)")
    trust_pickle: bool = Field(False, description="allow torch.load(weights_only=False): executes code in the file")
    input_bounds: tuple[float, float] | None = Field(
        None, description="valid input range [low, high]; default: the data loader's bounds"
    )
    normalization: Normalization | None = None
    output: Literal["auto", "logits", "probabilities"] = "auto"
    output_key: str | int | None = Field(None, description="select one output of a tuple/list (index) or dict (key)")
    name: str | None = Field(None, min_length=1, description="the model's name in the results store and history "
                             "(default: the config file's name without .yaml)")
    version: str | None = Field(None, min_length=1, description="the model's version in the results store (default: "
                                "the git commit of the repository the config sits in, with a dirty flag)")

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        sources = [name for name in MODEL_SOURCES if getattr(self, name) is not None]
        if len(sources) != 1:
            found = ", ".join(sources) or "none"
            raise ValueError("give exactly one of 'factory', 'torchscript', 'onnx', 'predict_fn' or 'huggingface' "
                             f"(found: {found})")
        if self.weights is not None and self.factory is None:
            raise ValueError("'weights' goes with 'factory' (a TorchScript file already holds its weights)")
        if self.input_bounds is not None and not self.input_bounds[0] < self.input_bounds[1]:
            raise ValueError("input_bounds must be [low, high] with low < high")
        return self


class DataConfig(_Strict):
    source: Literal["digits", "breast_cancer", "resume_names", "adult", "compas", "german", "csv", "parquet", "npz",
                    "idx", "torch", "imagefolder", "jsonl", "hf_dataset"]
    path: Path | None = Field(None, description="file for csv/parquet/npz/torch; images file for idx; the root "
                              "folder (one sub-folder of images per class) for imagefolder")
    labels_path: Path | None = Field(None, description="idx: the labels file")
    target: str | list[str] | None = Field(
        None, description="csv/parquet/jsonl/hf_dataset: target column (multilabel: a list of 0/1 columns)")
    text: str | None = Field(None, description="csv/parquet/jsonl/hf_dataset: the text column (text data: the model "
                             "gets it tokenized by model.tokenizer or the huggingface model's tokenizer)")
    features: list[str] | None = Field(None, description="csv/parquet: feature columns (default: all but target)")
    categorical: list[str] = Field(default_factory=list, description="csv/parquet: columns to one-hot encode")
    sensitive: list[str] = Field(default_factory=list, description="columns kept per row as sensitive attributes")
    sensitive_as_features: bool = Field(False, description="also feed the sensitive columns to the model")
    standardize: bool = Field(False, description="csv/parquet: standardize numeric features (z-score on this data)")
    x_key: str = "x"
    y_key: str = "y"
    class_names: list[str] | None = None
    split: Literal["test", "train", "all"] = Field(
        "test", description="built-in datasets: the seeded held-out split (25%), the rest, or all rows"
    )
    limit: int | None = Field(None, gt=0, description="audit a stratified, seeded subset of this many samples")
    input_shape: list[int] | None = Field(None, description="reshape each sample to this shape, e.g. [1, 28, 28]")
    scale: float | None = Field(None, description="divide inputs by this (e.g. 255 for IDX/uint8 images)")
    resize: int | tuple[int, int] | None = Field(
        None, description="imagefolder: resize each image, the shorter side to N pixels (aspect kept) or to [H, W]")
    crop: int | tuple[int, int] | None = Field(
        None, description="imagefolder: center-crop to N x N or [H, W] pixels after resizing")
    color: Literal["auto", "L", "RGB"] = Field(
        "auto", description="imagefolder: L (1 channel) or RGB (3 channels); auto: L if every image is grey, else RGB")
    extensions: list[str] = Field(list(IMAGE_EXTENSIONS), description="imagefolder: image file suffixes to read")
    workers: int = Field(0, ge=0, description="imagefolder: DataLoader worker processes decoding images (0: in "
                         "the main process)")
    @model_validator(mode="after")
    def _needs_path(self) -> DataConfig:
        if self.source not in BUILTIN_DATASETS and self.path is None:
            raise ValueError(f"data source '{self.source}' needs 'path'")
        if self.source in ("csv", "parquet", "jsonl", "hf_dataset") and not self.target:
            raise ValueError(f"data source '{self.source}' needs 'target' (the label column)")
        if self.source == "idx" and self.labels_path is None:
            raise ValueError("data source 'idx' needs 'labels_path' (the labels IDX file)")
        image_keys = [k for k in ("resize", "crop") if getattr(self, k) is not None]
        if image_keys and self.source != "imagefolder":
            raise ValueError(f"{image_keys} apply to data source 'imagefolder' only")
        for key in image_keys:
            value = getattr(self, key)
            sizes = [value] if isinstance(value, int) else list(value)
            if any(v <= 0 for v in sizes):
                raise ValueError(f"{key} sizes must be positive pixels, got {value}")
        return self


class SectionConfig(_Strict):
    """One section: a plugin name and its parameters (validated by the plugin)."""

    plugin: str
    enabled: bool = True
    params: dict[str, Any] = Field(default_factory=dict)


class CardConfig(_Strict):
    """The narrative of ``nnaudit card`` (docs/card.md): what the audit cannot measure. Every field is optional;
    the card says "not provided" for each one left out. Shown as text, never as markup."""

    description: str | None = Field(None, min_length=1, description="what the model is and does (model details)")
    owners: list[str] = Field(default_factory=list, description="people or teams responsible, with a contact")
    license: str | None = Field(None, min_length=1, description="the model's license")
    intended_use: str | None = Field(None, min_length=1, description="primary intended uses")
    intended_users: str | None = Field(None, min_length=1, description="primary intended users")
    out_of_scope: str | None = Field(None, min_length=1, description="uses the model is not meant for")
    factors: str | None = Field(None, min_length=1, description="groups, instruments and environments that matter")
    training_data: str | None = Field(None, min_length=1, description="what the model was trained on")
    evaluation_data: str | None = Field(None, min_length=1, description="why the audited data was chosen, how "
                                        "it was preprocessed")
    ethical_considerations: str | None = Field(None, min_length=1, description="risks, sensitive data, mitigations")
    caveats: str | None = Field(None, min_length=1, description="caveats and recommendations")
    references: list[str] = Field(default_factory=list, description="papers, documents, links (shown as text)")

    @field_validator("owners", "references")
    @classmethod
    def _no_blank(cls, value: list[str]) -> list[str]:
        if any(not item.strip() for item in value):
            raise ValueError("entries must be non-empty text")
        return value

    @field_validator("description", "license", "intended_use", "intended_users", "out_of_scope", "factors",
                     "training_data", "evaluation_data", "ethical_considerations", "caveats")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("empty text; write the text or remove the key (the card then says 'not provided')")
        return value


class AuditConfig(_Strict):
    title: str = "nnaudit run"
    model: ModelConfig
    data: DataConfig
    train_data: DataConfig | None = Field(
        None, description="training data for `nnaudit harden` (default: the train split of a built-in data source)")
    sections: dict[str, SectionConfig] = Field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    batch_size: int = Field(256, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="attacks and explanations under autocast in bf16/fp16; kept only when a check on "
        "held-out samples shows robust accuracy within 0.5 points of fp32 (docs/scale.md)")
    compile: bool = Field(False, description="run the torch model through torch.compile")
    report: bool = True
    gate: dict[str, Any] | None = Field(
        None, description="the run's gate policy (same keys as a policy file); its verdict is stored in results.json"
    )
    store: str | None = Field(
        None, description="results store the run is registered in when it ends: a SQLite file or a "
        "postgresql+psycopg:// URL without password (docs/store.md); --store and $NNAUDIT_STORE override it")
    card: CardConfig | None = Field(
        None, description="the model card's narrative (intended use, ethical considerations, caveats...): "
        "`nnaudit card RUN` (docs/card.md)")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda", "mps") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError("device must be auto, cpu, cuda, cuda:N or mps")

    @field_validator("sections", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """Accept ``performance: {}`` or ``performance: {param: 1}`` as shorthand for plugin=name."""
        if value is None:
            return {}
        if isinstance(value, list):  # - performance\n- imbalance
            value = {str(name): {} for name in value}
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        for name, spec in value.items():
            spec = {} if spec is None else spec
            if isinstance(spec, dict) and "plugin" not in spec:
                enabled = spec.get("enabled", True)
                params = {k: v for k, v in spec.items() if k != "enabled"}
                spec = {"plugin": name, "enabled": enabled, "params": params}
            out[name] = spec
        return out


def _format_validation_error(err: ValidationError) -> ConfigError:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    kind = first["type"]
    msg = first["msg"]
    if kind == "extra_forbidden":
        parent = key.rsplit(".", 1)[0] if "." in key else "<root>"
        msg = f"unknown key; remove it or check its spelling (under '{parent}')"
    elif kind == "missing":
        msg = "required key is missing; add it"
    else:
        msg = msg.removeprefix("Value error, ")
    extra = f" ({len(err.errors()) - 1} more problem(s) after this one)" if len(err.errors()) > 1 else ""
    return ConfigError(key, msg + extra)


def parse_config(data: Any, *, base_dir: Path | None = None) -> AuditConfig:
    """Validate a config dict. Relative paths resolve against ``base_dir`` (the YAML file's folder)."""
    if not isinstance(data, dict):
        raise ConfigError("<root>", "the config must be a YAML mapping with at least 'model' and 'data'")
    try:
        config = AuditConfig.model_validate(data)
    except ValidationError as err:
        raise _format_validation_error(err) from err
    if config.gate is not None:
        from audit.policy import check_policy_data

        config.gate = check_policy_data(config.gate, key="gate")
    if config.store is not None:
        _check_store(config.store)
    if base_dir is not None:
        _resolve_paths(config, base_dir)
    _check_files(config)
    return config


def _check_store(value: str) -> None:
    """``store:`` is copied into results.json with the config: it may not hold a password."""
    from audit.engine.store_url import has_password, redact_url

    if has_password(value):
        raise ConfigError("store", f"{redact_url(value)} holds a password, and the config is copied into "
                          "results.json: remove it from the URL and set PGPASSWORD (or ~/.pgpass) instead, or pass "
                          "the URL with --store / $NNAUDIT_STORE")
    if not value.strip():
        raise ConfigError("store", "empty; give a SQLite file path or a postgresql+psycopg:// URL, or remove the key")


def _resolve_paths(config: AuditConfig, base: Path) -> None:
    for holder, name in (
        (config.model, "weights"),
        (config.model, "torchscript"),
        (config.model, "onnx"),
        (config.model, "huggingface"),
        (config.model, "tokenizer"),
        (config.data, "path"),
        (config.data, "labels_path"),
        *((config.train_data, name) for name in ("path", "labels_path") if config.train_data is not None),
    ):
        value = getattr(holder, name)
        if value is not None and not Path(value).is_absolute():
            setattr(holder, name, (base / value).resolve())
    from audit.engine.store_url import is_url

    if config.store is not None and not is_url(config.store) and not Path(config.store).expanduser().is_absolute():
        config.store = str((base / config.store).resolve())  # a SQLite file beside the config


def _check_files(config: AuditConfig) -> None:
    for key, value in (
        ("model.weights", config.model.weights),
        ("model.torchscript", config.model.torchscript),
        ("model.onnx", config.model.onnx),
        ("model.huggingface", config.model.huggingface),
        ("model.tokenizer", config.model.tokenizer),
        ("data.path", config.data.path),
        ("data.labels_path", config.data.labels_path),
        *((f"train_data.{name}", getattr(config.train_data, name)) for name in ("path", "labels_path")
          if config.train_data is not None),
    ):
        if value is not None and not Path(value).exists():
            raise ConfigError(key, f"file not found: {value}; fix the path (relative paths start at the config file)")
        if value is not None and key.startswith("model.") and not Path(value).is_file():
            if key in ("model.huggingface", "model.tokenizer") and Path(value).is_dir():
                continue
            kind = "a directory" if Path(value).is_dir() else "not a regular file (a device or pipe)"
            raise ConfigError(key, f"{value} is {kind}; point {key} at the saved model file")
    if config.data.source == "imagefolder" and config.data.path is not None and not Path(config.data.path).is_dir():
        raise ConfigError("data.path", f"{config.data.path} is not a folder; imagefolder reads a root folder holding "
                          "one sub-folder of images per class")


def load_config(path: str | Path) -> AuditConfig:
    import yaml

    file = Path(path)
    if not file.exists():
        raise ConfigError("<file>", f"config file not found: {file}")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError("<file>", f"{file} is not valid YAML: {err}") from err
    return parse_config(data, base_dir=file.parent.resolve())
