"""The quiz's own vocabulary (``quiz.vocabulary``): the words every floor of the house shares — the graph,
the API, the evaluation, and the telemetry's bounded label values. It imports nothing of the house."""
