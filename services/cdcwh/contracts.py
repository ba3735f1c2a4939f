"""Load table contracts from ``schemas/contracts/*.toml`` (the file side of :mod:`cdcwh.core.contract`).

One file per topic, named after it (``shop.public.orders.toml``); a ``topic`` key inside the file overrides
the file name. The format is documented in docs/decoding.md.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import ValidationError

from cdcwh.core.contract import TableContract, parse_contract
from cdcwh.errors import ConfigError


def load_contracts(directory: Path) -> dict[str, TableContract]:
    """Every contract under ``directory``, keyed by topic.

    Raises :class:`~cdcwh.errors.ConfigError` naming the file when the directory is missing, a file is not
    valid TOML or not a valid contract, or two files claim the same topic.
    """
    if not directory.is_dir():
        raise ConfigError(f"CDCWH_CONTRACTS_DIR: contract directory {directory} does not exist")
    contracts: dict[str, TableContract] = {}
    origin: dict[str, Path] = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
            contract = parse_contract(data, topic=path.stem)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"contract {path} is not valid TOML: {exc}") from exc
        except ValidationError as exc:
            raise ConfigError(f"contract {path} is invalid: {exc}") from exc
        if contract.topic in contracts:
            raise ConfigError(
                f"contracts {origin[contract.topic]} and {path} both claim topic {contract.topic}"
            )
        contracts[contract.topic] = contract
        origin[contract.topic] = path
    return contracts
