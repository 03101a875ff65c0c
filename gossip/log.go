package gossip

import (
	"context"
	"log/slog"
	"strings"
)

// logWriter turns memberlist's log.Logger lines ("[WARN] memberlist: ...") into slog records:
// [DEBUG] and [INFO] at debug, [WARN] and [ERR] at warn. memberlist's own [INFO] lines
// ("Marking n2 as failed") duplicate the member events we log at info ourselves, and its
// warnings (a refuted suspicion, failed probes, name conflicts) are worth seeing without
// turning on debug.
type logWriter struct{ logger *slog.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	level := slog.LevelDebug
	for _, prefix := range [...]string{"[DEBUG] ", "[INFO] ", "[WARN] ", "[ERR] ", "[ERROR] "} {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			line = rest
			if prefix == "[WARN] " || prefix == "[ERR] " || prefix == "[ERROR] " {
				level = slog.LevelWarn
			}
			break
		}
	}
	w.logger.Log(context.Background(), level, line)
	return len(p), nil
}
