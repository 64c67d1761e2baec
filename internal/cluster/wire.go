package cluster

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/fleetrelay/fleetrelay/internal/store"
)

// The devices' data in cluster mode, as kept in JetStream. Every node of one prefix reads and
// writes exactly this layout; changing it is changing the cluster's on-disk format.
//
//   - The journal: stream <prefix>_journal, subjects <prefix>.j.>. One message per stored frame
//     (DATA, RESULT or notification), on the subject <prefix>.j.<partition>.<token> of its device
//     (JournalSubject), its body the store's segment encoding of that one frame (EncodeFrame), so
//     the frame's route IDs are the cluster's (RouteID). DATA frames carry the Nats-Msg-Id
//     <token>:<seq> (MsgID): JetStream drops a resend of a stored frame within its duplicate
//     window and answers it as a duplicate. A result carries the header Fleetrelay-Last-Seq
//     (LastSeqHeader): its device's lastSeq when it was published. A device's messages are
//     published one at a time, each expecting the subject's last sequence (journal.go), so its
//     DATA frames are on its subject in the order of its chain, without holes.
//   - Partitions: a device's frames are all in one partition (Partition, FNV-1a of the identity
//     modulo the number of partitions, fixed when the stream is created and kept in its
//     metadata), so one device's messages keep their order while partitions are delivered in
//     parallel. A partition's subjects are <prefix>.j.<partition>.> (PartitionFilter).
//   - Key-value buckets, named <prefix>_<what> (Bucket): see the constants below.
const (
	// BucketDevices holds each device's lastSeq (key: DeviceKey, the device's token with a
	// leading "~" written "=", which keys do not allow; value: JSON {"last_seq":N,"node":name}).
	BucketDevices = "devices"
	// BucketRoutes holds the cluster's route IDs (route names and the numbers taken: keys
	// "id.<n>" holding the name that took n, "name.<route>" holding n in decimal; see
	// routeids.go).
	BucketRoutes = "routes"
	// BucketLeases holds which node owns each partition (a key per partition, with a TTL).
	BucketLeases = "leases"
	// BucketCursors holds, per partition and route, the last journal sequence delivered.
	BucketCursors = "cursors"
	// BucketNodes holds the live nodes (a key per node, with a TTL).
	BucketNodes = "nodes"
)

// LastSeqHeader is the header of a result message holding its device's lastSeq, in decimal.
const LastSeqHeader = "Fleetrelay-Last-Seq"

// DefaultPartitions is the number of partitions of a journal created without a setting.
const DefaultPartitions = 32

// metaPartitions is the journal stream's metadata key holding its number of partitions.
const metaPartitions = "fleetrelay_partitions"

// JournalStream returns the name of the journal's stream for prefix.
func JournalStream(prefix string) string { return prefix + "_journal" }

// Bucket returns the name of the key-value bucket what (Bucket* constants) for prefix.
func Bucket(prefix, what string) string { return prefix + "_" + what }

// Partition returns the partition of device among n: FNV-1a of the identity, modulo n.
func Partition(device string, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(device); i++ {
		h ^= uint32(device[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}

// noticeToken is the token of notification messages (which belong to no device, partition 0).
// It cannot be another device's: a token that is not the identity itself starts with "~" and
// continues in hex digits only.
const noticeToken = "~notice"

// Token returns device's subject token: the identity itself when it is 1 to 128 letters, digits,
// - or _, else "~" and its bytes in hex (NATS subjects take no '.', '*', '>' or white space).
func Token(device string) string {
	if safeToken(device) {
		return device
	}
	return fmt.Sprintf("~%x", device)
}

func safeToken(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// JournalSubject returns the subject of frame f in a journal of n partitions.
func JournalSubject(prefix string, f *store.Frame, n int) string {
	if f.Notice {
		return prefix + ".j.0." + noticeToken
	}
	return prefix + ".j." + strconv.Itoa(Partition(f.Device, n)) + "." + Token(f.Device)
}

// DeviceSubject returns the subject of device's frames in a journal of n partitions.
func DeviceSubject(prefix, device string, n int) string {
	return prefix + ".j." + strconv.Itoa(Partition(device, n)) + "." + Token(device)
}

// PartitionFilter returns the subject filter of partition p's messages.
func PartitionFilter(prefix string, p int) string { return prefix + ".j." + strconv.Itoa(p) + ".>" }

// SubjectPartition returns the partition of a journal subject, false if it is not one.
func SubjectPartition(prefix, subject string) (int, bool) {
	rest, ok := strings.CutPrefix(subject, prefix+".j.")
	if !ok {
		return 0, false
	}
	p, _, ok := strings.Cut(rest, ".")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(p)
	return n, err == nil && n >= 0
}

// MsgID returns the Nats-Msg-Id of a DATA frame ("" for results and notifications, which are
// outside the devices' seq space and not deduplicated by JetStream).
func MsgID(f *store.Frame) string {
	if f.Result || f.Notice {
		return ""
	}
	return Token(f.Device) + ":" + strconv.FormatUint(f.Seq, 10)
}

// EncodeFrame appends f's journal message body to dst: the store's segment encoding of f alone.
func EncodeFrame(dst []byte, f *store.Frame) []byte {
	return store.AppendSegment(dst, []*store.Frame{f})
}

// DecodeFrame decodes a journal message body.
func DecodeFrame(data []byte) (*store.Frame, error) {
	seg, err := store.DecodeSegment(0, data)
	if err != nil {
		return nil, err
	}
	if len(seg.Frames) != 1 {
		return nil, fmt.Errorf("journal message holds %d frames, want 1", len(seg.Frames))
	}
	return seg.Frames[0], nil
}
