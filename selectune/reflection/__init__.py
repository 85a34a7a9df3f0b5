"""Stage 2, Selective Reflection-Tuning recycling (arXiv 2402.10110): a teacher rewrites instructions and answers,
the student keeps a rewrite only when IFD / reversed IFD say it helps.

teachers/  who rewrites (local model or OpenAI-compatible endpoint)    prompts/  the reflection prompts (Jinja)
parse.py   pure parsers of the teacher's replies                         gate.py   the keep-if-better rule
ifd.py     the student's IFD and reversed IFD                            recycle.py  reflect, score, gate
config.py  TeacherConfig, IFDConfig, ReflectionConfig                    stage.py  recycle_stage -> RecycleOutputs
"""
