"""Driving a Unitree go-family robot (Go2) over Unitree SDK2's DDS topics, and a simulated one
on the same topics.

- messages: LowCmd_ / LowState_ and their parts in the robot's fixed C layout, and the CRC
  the robot checks (plain Python; no DDS library needed).
- idl: the same messages as cyclonedds IDL structs, so that samples interoperate with the
  robot and with Unitree's SDK (needs cyclonedds: pip install "metarobot[unitree]").
- robot: UnitreeRobot, a Robot for the runner: rt/lowstate -> the policy's observation
  through the deployment config, position targets with the config's gains on rt/lowcmd at
  the command rate, through the safety state machine (metarobot.deploy.safety).
- sim: a simulated Go2Walk robot publishing rt/lowstate and obeying rt/lowcmd with the motor
  PD law at every physics step, with the reality-gap flags of the UDP simulated robot.
"""
