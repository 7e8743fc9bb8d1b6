"""Options of the replay source: a recording file read as if it were a controller."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from collector.sources import ConfigFile, SourceBase


class ReplayOptions(SourceBase):
    kind: Literal["replay"]
    path: ConfigFile = Field(description="The recording: CSV, a timestamp column and one column per tag.")
    separator: str = Field(default=",", description="Field separator; 'whitespace' for runs of blanks.")
    header: bool = Field(default=True, description="First line names the columns; else columns are 1, 2, ...")
    timestamp_column: str | None = Field(
        default="timestamp", description="Column of the timestamps; null numbers rows by row_interval_s."
    )
    timestamp_format: str = Field(
        default="iso", description="iso, epoch_s, epoch_ms, or a strptime format such as %d/%m/%y %H."
    )
    row_interval_s: Annotated[float, Field(gt=0, description="Seconds between rows without timestamps.")] = 1.0
    label_column: str | None = Field(default=None, description="Ground-truth column carried to replay outputs.")
    speed: Annotated[float, Field(gt=0, description="Playback speed in the daemon; 1.0 is real time.")] = 1.0
    loop: bool = Field(default=False, description="Start over at the end, with time moving on.")
    rebase: bool = Field(default=True, description="In the daemon, shift the recording's time to now.")

    @field_validator("separator")
    @classmethod
    def _one_char(cls, value: str) -> str:
        if value != "whitespace" and len(value) != 1:
            raise ValueError("must be one character or 'whitespace'")
        return value

    @field_validator("timestamp_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in ("iso", "epoch_s", "epoch_ms") and "%" not in value:
            raise ValueError("must be iso, epoch_s, epoch_ms or a strptime format containing %")
        return value
