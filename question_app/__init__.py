"""The ``question-app`` command (``question_app.__main__``): the top floor of the house, the only one that
knows every command — serving (``app``), evaluating and optimising (``evals``)."""
