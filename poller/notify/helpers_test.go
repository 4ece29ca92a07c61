package notify_test

import (
	"encoding/json"

	"github.com/presence-bridge/presence-bridge/graph"
	"github.com/presence-bridge/presence-bridge/poller"
)

func jsonMarshal(v any) ([]byte, error)   { return json.Marshal(v) }
func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func readerOf(r *rig) poller.PresenceReader {
	return graph.New(graph.Options{Endpoint: r.graph.URL(), HTTPClient: r.graph.Client()})
}
