"""The ``make report`` build: notebook parameters, notebook execution, and the report's assembly.

``parameters`` checks the user's parameters against each notebook's ``parameters`` cell and writes
one stamp file per notebook; ``execute`` runs one notebook with papermill, keeping the previous
results when it fails; ``assemble`` writes ``report.html`` and the appendices from the executed
notebooks and the ``*.md`` front and back matter in this folder.
"""
