package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRun(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(&out))
	assert.Equal(t, `rejected (true):
  AddProduct.SKU fails alphanum (got ab-1)
  AddProduct.Name fails required (got )
  AddProduct.Price fails gt=0 (got -5)
Desk lamp costs 40
Desk lamp costs 40
Desk lamp costs 40
catalog reads: 1
after the change: Desk lamp costs 35 (catalog reads: 2)
missing product: product NOPE00: not found (catalog reads: 4)
metrics:
  command main.AddProduct        calls=2 errors=1
  command main.ChangePrice       calls=1 errors=0
  query   main.GetProduct        calls=6 errors=2
`, out.String())
}
