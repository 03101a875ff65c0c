package store

import (
	"context"
	"errors"
)

func openPostgres(ctx context.Context, url string, opts Options) (Store, error) {
	return nil, errors.New("todo")
}
