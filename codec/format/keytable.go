package format

// keyTable finds a record key among the few a template reads, faster than a Go map for short
// byte-slice keys: an open-addressing table with FNV-1a hashes, built once by Compile.
type keyTable struct {
	slots []int32  // index+1 into names; 0: empty
	names []string // by index
	mask  uint32
}

func fnv1a(b []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	return h
}

func fnv1aString(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint32(s[i])) * 16777619
	}
	return h
}

// newKeyTable builds the table for names (index i is names[i]).
func newKeyTable(names []string) keyTable {
	size := 8
	for size < 2*len(names) {
		size *= 2
	}
	kt := keyTable{slots: make([]int32, size), names: names, mask: uint32(size - 1)}
	for i, n := range names {
		h := fnv1aString(n) & kt.mask
		for kt.slots[h] != 0 {
			h = (h + 1) & kt.mask
		}
		kt.slots[h] = int32(i + 1)
	}
	return kt
}

// find returns the index of key, or -1.
func (kt *keyTable) find(key []byte) int {
	if len(kt.names) == 0 {
		return -1
	}
	for h := fnv1a(key) & kt.mask; ; h = (h + 1) & kt.mask {
		i := kt.slots[h]
		if i == 0 {
			return -1
		}
		if kt.names[i-1] == string(key) {
			return int(i - 1)
		}
	}
}
