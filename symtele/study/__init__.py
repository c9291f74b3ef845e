"""The report's side of the package: what the notebooks, benchmarks and sweeps run and read.

* :mod:`~symtele.study.settings`: the writeup's settings, each defined once (no torch);
* :mod:`~symtele.study.published`: the published numbers the report compares against (no torch);
* :mod:`~symtele.study.experiments`: one seeded function per experiment, returning tidy records;
* :mod:`~symtele.study.minibatch`: minibatch training without and with the Teleporter's two ways of accepting;
* :mod:`~symtele.study.ensemble`: many networks of one architecture trained by plain SGD at once;
* :mod:`~symtele.study.results`: the results files, and atomic writes of every file of the build;
* :mod:`~symtele.study.summaries`: reductions of records to the numbers the report quotes;
* :mod:`~symtele.study.claims`: each claim of the writeup checked against the results files;
* :mod:`~symtele.study.sweep`: grids of teleport schedules, locally or on a Dask cluster;
* :mod:`~symtele.study.bench`, :mod:`~symtele.study.bench_networks`, :mod:`~symtele.study.bench_attention`: what
  teleportation costs and buys, in wall-clock time, by the protocol of :mod:`~symtele.study.bench_protocol`, as
  the records of :mod:`~symtele.study.bench_records`.

The library core and :mod:`symtele.teleports` never import from here. ``settings``, ``published``,
``results``, ``summaries`` and ``claims`` load without torch.
"""
