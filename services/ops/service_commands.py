"""`layerbus coordinator | stage | gateway`: each service's settings classes as one command."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from services.coordinator.settings import CoordinatorSettings
from services.gateway.settings import GatewaySettings
from services.ops.command_settings import CommandSettings
from services.stage.settings import StageSettings
from shared.engine_settings import EngineSettings
from shared.settings import TransportSettings


@contextmanager
def _start_errors(prog: str) -> Iterator[None]:
    """A service that cannot start for a setting exits with a line naming it, no traceback."""
    from shared.curve import InsecureBind, KeyFileError
    from shared.metrics_endpoint import MetricsPortError

    try:
        yield
    except (InsecureBind, KeyFileError, MetricsPortError) as err:
        raise SystemExit(f"{prog}: {err}") from None


class CoordinatorCommand(CommandSettings, TransportSettings, EngineSettings, CoordinatorSettings):
    """`layerbus coordinator`: the scheduler; stages and gateways connect to it."""

    parts = (CoordinatorSettings, EngineSettings, TransportSettings)

    def cli_cmd(self) -> None:
        from services.coordinator.server import run

        with _start_errors("layerbus coordinator"):
            run(
                self.part(CoordinatorSettings),
                self.part(EngineSettings),
                self.part(TransportSettings),
            )


class StageCommand(CommandSettings, TransportSettings, EngineSettings, StageSettings):
    """`layerbus stage`: one slice of the model's layers, registered with a coordinator."""

    parts = (StageSettings, EngineSettings, TransportSettings)

    def cli_cmd(self) -> None:
        from services.stage.server import run

        with _start_errors("layerbus stage"):
            run(self.part(StageSettings), self.part(EngineSettings), self.part(TransportSettings))


class GatewayCommand(CommandSettings, GatewaySettings):
    """`layerbus gateway`: the OpenAI-compatible HTTP API in front of a coordinator."""

    parts = (GatewaySettings,)

    def cli_cmd(self) -> None:
        from services.gateway.server import run
        from shared.curve import ServiceKeys

        settings = self.part(GatewaySettings)
        with _start_errors("layerbus gateway"):
            # Fail before uvicorn starts, with the name of the setting to fix.
            ServiceKeys.load(settings.secret_key, settings.coordinator_key, True)
            run(settings)
