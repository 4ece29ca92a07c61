package main

import "testing"

func TestMemoryLimitScalesBeyondAThousandUsers(t *testing.T) {
	for _, tt := range []struct {
		users int
		want  int64
	}{
		{0, 20 << 20},
		{10, 20 << 20},
		{1000, 20 << 20},
		{2000, 12<<20 + 2000*8<<10}, // 27.6 MiB
		{10000, 12<<20 + 10000*8<<10},
	} {
		if got := memoryLimit(tt.users); got != tt.want {
			t.Errorf("memoryLimit(%d) = %d MiB, want %d MiB", tt.users, got>>20, tt.want>>20)
		}
	}
}
