"""The composition layer: the only code that reads ``ExperimentConfig`` and builds objects
from it (``builders``), and the command entry points (``train``, ``sid``, ``export`` /
``recommend`` / ``evaluate-pipeline``). Library packages never import it."""
