"""The small task the trainer's tests run the demo recipe on: a op b, operands 0..5, + - * (108 facts, a quarter
held out), the demo's task before it moved to 4-operand chains. Its 130-step warm-up is cached once per machine and
shared by every test that uses it; a test about launching or data plumbing gains nothing from the chains."""

SMALL_TASK = ["am_rl.max_operand=5", "am_rl.max_second_operand=null", "am_rl.ops=+-*", "am_rl.operands=2",
              "am_rl.warmup.steps=130"]  # fmt: skip
