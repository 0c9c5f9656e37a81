package main

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// Account is what the service keeps.
type Account struct {
	ID      int    `json:"id"`
	Owner   string `json:"owner"`
	Email   string `json:"email"`
	Balance int    `json:"balance"`
}

// Repository stores accounts. The handlers depend on it, not on how it
// stores them.
type Repository interface {
	Create(ctx context.Context, owner, email string) (Account, error)
	Get(ctx context.Context, id int) (Account, error)
	AddToBalance(ctx context.Context, id, amount int) (Account, error)
}

// ErrNoAccount is returned for an unknown account id.
var ErrNoAccount = errors.New("no such account")

// MemoryRepository is a Repository in memory, safe for concurrent use.
type MemoryRepository struct {
	mu       sync.Mutex
	accounts []Account
}

// Create adds an account.
func (r *MemoryRepository) Create(_ context.Context, owner, email string) (Account, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := Account{ID: len(r.accounts) + 1, Owner: owner, Email: email}
	r.accounts = append(r.accounts, a)
	return a, nil
}

// Get returns an account.
func (r *MemoryRepository) Get(_ context.Context, id int) (Account, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id < 1 || id > len(r.accounts) {
		return Account{}, ErrNoAccount
	}
	return r.accounts[id-1], nil
}

// AddToBalance changes an account's balance.
func (r *MemoryRepository) AddToBalance(_ context.Context, id, amount int) (Account, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id < 1 || id > len(r.accounts) {
		return Account{}, ErrNoAccount
	}
	r.accounts[id-1].Balance += amount
	return r.accounts[id-1], nil
}

// FraudCheck stands for a downstream service that deposits must consult.
// While Flaky is set, it fails, as a real dependency does during an
// outage.
type FraudCheck struct {
	Flaky atomic.Bool
	calls atomic.Int64
}

// ErrDownstream is the failing downstream's error.
var ErrDownstream = errors.New("fraud check unavailable")

// Check approves a deposit, or fails while the service is flaky.
func (f *FraudCheck) Check(ctx context.Context, account, amount int) error {
	f.calls.Add(1)
	if f.Flaky.Load() {
		return ErrDownstream
	}
	return ctx.Err()
}
