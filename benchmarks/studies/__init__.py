"""Studies: measurements made to decide one question (which search algorithm, which cuts, what a shortcut costs
in accuracy, how calls transfer), kept so that their figures can be made again. Each runs as
`python -m benchmarks.studies.NAME`; `cuts` is also a part of the bench (`python -m benchmarks --only cuts`)."""
