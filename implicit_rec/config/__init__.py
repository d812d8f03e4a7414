"""The configuration of every job (``implicit-rec run``, ``train-decentralized``, the experiment
scripts): a TOML file with five sections, every key validated and defined once.

Sections and keys (defaults in :data:`DEFAULT`; ``implicit-rec config`` prints them as commented
TOML, ``docs/configuration.md`` is their reference)::

    [data]          where the events come from: data.source, data.path, the synthetic preset
    [data.options]  options of the dataset loader (column names, split fractions, ...)
    [fm]            the foundation model, its training window and its logged embeddings
    [vm]            the vertical models: architectures x transfer variants x seeds, their training
    [sweep]         the test-time iteration sweep, the explicit baselines and the Lipschitz diagnostic
    [dsgd]          decentralized training of one VM across agents (``implicit-rec train-decentralized``)

Modules: ``names`` (choice lists, renamed keys, glossary), ``fields`` (a key's declaration, the
coercion and range checks, :class:`ConfigError`), ``sections`` (the section dataclasses: where a key
is added), ``leakage`` (the label-leakage checks across sections), ``loading`` (file, ``--set`` and
flags, in that order of precedence), ``toml`` (:func:`to_toml`), ``reference`` (docs/configuration.md).
"""

from .fields import _AUTO as _AUTO
from .fields import ConfigError
from .leakage import check_run, leakage_problems
from .loading import (
    add_config_args,
    check_data,
    config_from_args,
    from_dict,
    load_config,
    parse_dataset,
    parse_override,
    read_text_utf8,
)
from .names import (
    ARCHS,
    BASELINE_MATCHES,
    EXPLICIT_ARCHS,
    GLOSSARY,
    IMPLICIT_ARCHS,
    METHODS,
    OPTIMIZERS,
    RELEASE_FILES,
    RELEASES,
    RENAMED,
    REPLACED,
    SEQUENCE_ARCHS,
    SHARDINGS,
    SOURCES,
    TRANSFERS,
)
from .reference import REGENERATE, markdown_reference
from .sections import (
    DEFAULT,
    SECTIONS,
    DataConfig,
    DSGDConfig,
    FMConfig,
    LoaderOptions,
    RunConfig,
    SweepConfig,
    VMConfig,
)
from .toml import to_toml

__all__ = [
    "ARCHS",
    "BASELINE_MATCHES",
    "DEFAULT",
    "EXPLICIT_ARCHS",
    "GLOSSARY",
    "IMPLICIT_ARCHS",
    "METHODS",
    "OPTIMIZERS",
    "REGENERATE",
    "RELEASES",
    "RELEASE_FILES",
    "RENAMED",
    "REPLACED",
    "SECTIONS",
    "SEQUENCE_ARCHS",
    "SHARDINGS",
    "SOURCES",
    "TRANSFERS",
    "ConfigError",
    "DSGDConfig",
    "DataConfig",
    "FMConfig",
    "LoaderOptions",
    "RunConfig",
    "SweepConfig",
    "VMConfig",
    "add_config_args",
    "check_data",
    "check_run",
    "config_from_args",
    "from_dict",
    "leakage_problems",
    "load_config",
    "markdown_reference",
    "parse_dataset",
    "parse_override",
    "read_text_utf8",
    "to_toml",
]
