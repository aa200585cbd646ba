"""ROS 2 deployment: robot driver, policy, teleop and recorder nodes over rclpy or a ROS 2-compatible
cyclonedds transport. Run a node with `python -m robolearn.ros <node> [--ros-args ...]`, a whole
graph with `robolearn deploy`, or with the ROS 2 launch files in `launch/`."""
