"""Evaluation of the quiz's agents: a versioned question set (``questions.yaml``), ``question-app eval``
(the Student answers the set's questions through the graph, two judges grade) and its statistics."""
