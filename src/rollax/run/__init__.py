"""Running experiments: the typed experiment, its plan, the compiled (or host) program, the
loop with its callbacks, and the result.

Data flow: `Experiment` -> `make_plan` -> `Learner` + `JittedProgram`/`HostProgram` ->
`train` (chunks, callbacks) -> `TrainResult`.
"""

from rollax.run.experiment import Experiment
from rollax.run.loop import TrainingDiverged, train
from rollax.run.result import TrainResult

__all__ = ["Experiment", "TrainResult", "TrainingDiverged", "train"]
