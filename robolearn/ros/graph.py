"""The ROS 2 graph announcement of a DDS-transport node, so ROS 2 tools see it as a node.

Every rmw implementation publishes, per DDS participant, which ROS nodes it hosts and which readers and
writers belong to each node, on the DDS topic `ros_discovery_info` (type
`rmw_dds_common/msg/ParticipantEntitiesInfo`; reliable, transient-local, keep-last 1). ROS 2's graph cache
(`ros2 node list`, `rclpy.Node.get_node_names_and_namespaces`, `get_publisher_names_and_types_by_node`)
is built from it; without it a participant's endpoints show up under `_CREATED_BY_BARE_DDS_APP_`. Entities
are identified by their DDS GUID (16 bytes), the gid rmw uses. The participant's USER_DATA carries
`enclave=/;` as rmw sets it.
"""

from dataclasses import dataclass, field

from cyclonedds.idl import IdlStruct
from cyclonedds.idl.annotations import final
from cyclonedds.idl.types import array, bounded_str, sequence, uint8

DISCOVERY_TOPIC = "ros_discovery_info"
USER_DATA = b"enclave=/;"


@dataclass
@final
class Gid(IdlStruct, typename="rmw_dds_common::msg::dds_::Gid_"):
    """rmw_dds_common/msg/Gid: an entity's DDS GUID."""

    data: array[uint8, 16] = field(default_factory=lambda: [0] * 16)


@dataclass
@final
class NodeEntitiesInfo(IdlStruct, typename="rmw_dds_common::msg::dds_::NodeEntitiesInfo_"):
    """rmw_dds_common/msg/NodeEntitiesInfo: one node's name and the gids of its readers and writers."""

    node_namespace: bounded_str[256] = "/"
    node_name: bounded_str[256] = ""
    reader_gid_seq: sequence[Gid] = field(default_factory=list)
    writer_gid_seq: sequence[Gid] = field(default_factory=list)


@dataclass
@final
class ParticipantEntitiesInfo(IdlStruct, typename="rmw_dds_common::msg::dds_::ParticipantEntitiesInfo_"):
    """rmw_dds_common/msg/ParticipantEntitiesInfo: a participant's gid and the nodes it hosts."""

    gid: Gid = field(default_factory=Gid)
    node_entities_info_seq: sequence[NodeEntitiesInfo] = field(default_factory=list)


def gid(entity) -> Gid:
    """The gid of a cyclonedds participant, reader or writer: its GUID's 16 bytes."""
    return Gid(list(entity.guid.bytes))


class GraphAnnouncer:
    """Publishes the participant's node and endpoints on `ros_discovery_info` whenever they change.

    Args:
        participant: the node's cyclonedds DomainParticipant (one node per participant).
        node_name: the ROS node name (namespace "/").
    """

    def __init__(self, participant, node_name: str):
        from cyclonedds.pub import DataWriter
        from cyclonedds.qos import Policy, Qos
        from cyclonedds.topic import Topic

        qos = Qos(Policy.Reliability.Reliable(0), Policy.Durability.TransientLocal, Policy.History.KeepLast(1),
                  Policy.WriterDataLifecycle(autodispose=False))
        self.writer = DataWriter(participant, Topic(participant, DISCOVERY_TOPIC, ParticipantEntitiesInfo), qos=qos)
        self.info = ParticipantEntitiesInfo(gid(participant), [NodeEntitiesInfo("/", node_name)])
        self.publish()

    def add(self, entity, is_writer: bool) -> None:
        """Announce a new reader or writer of the node."""
        node = self.info.node_entities_info_seq[0]
        (node.writer_gid_seq if is_writer else node.reader_gid_seq).append(gid(entity))
        self.publish()

    def publish(self) -> None:
        self.writer.write(self.info)
