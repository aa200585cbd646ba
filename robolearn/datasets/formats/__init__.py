"""Datasets of other tools, in and out: LeRobot (v3.0; v2.x read), robomimic HDF5 (read), ROS 2 bags (MCAP,
SQLite3). Each reader yields episodes as {robolearn key: (T, ...)} arrays; `robolearn dataset import/export`
(robolearn.convert) writes them atomically (`common.atomic_output`)."""
