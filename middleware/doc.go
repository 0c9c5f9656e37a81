// Package middleware provides the decorators a production service puts
// around its command and query handlers: logging, validation, timeouts,
// circuit breaking, rate limiting, retries, panic recovery, metrics and,
// for queries, caching.
//
// Each decorator but the cache is a [cqrs.Interceptor]: one value serves
// every message type, and is set up once per type when a handler is
// registered, so a dispatch pays only for what it uses. Give it to a whole
// bus with [cqrs.WithInterceptors], or to one handler with
// [cqrs.Intercept]:
//
//	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(
//		middleware.Logging(middleware.LoggingConfig{Logger: logger}),
//		middleware.Validation(middleware.ValidationConfig{}),
//		middleware.Timeout(2*time.Second),
//	))
//	err := cqrs.Register(commands, charge,
//		cqrs.Intercept[Charge, Receipt](commands, middleware.CircuitBreaker(middleware.BreakerConfig{})))
//
// The [Cache] is typed by its query, keyed by the query's value or its
// CacheKey, and is given to [cqrs.Register] as [cqrs.Middleware].
//
// # The standard stack
//
// [Config] describes the stack of both buses, loadable from YAML or JSON
// with [LoadConfig], and [Config.Build] assembles a stack per kind in the
// recommended order, outermost first:
//
//	commands: metrics, logging, validation, rate limit, timeout, retry (if asked), breaker
//	queries:  metrics, logging, validation, cache, rate limit, timeout, retry, breaker
//
// The outer layers see what the inner ones do: metrics and logging record
// a message refused by validation, the rate limit or the breaker, and a
// cache hit; a message that fails validation spends no rate-limit token
// and never reaches the breaker; a cache hit ([NewQueryCache]) skips
// everything after the cache; the timeout bounds all retries together;
// and an open breaker, which is not retryable, ends the retries. Commands
// are retried only when the config's commands section asks. [Config.Build]
// explains each choice. [NewStack] builds the same stack from interceptors
// made by hand, and [PlaceCache] places any cache in it, so that a
// streaming query on the same bus still runs the inner layers.
//
// # Settings
//
// One rule holds for every setting, in Go and in a config file:
//
//   - A setting left out takes the default its field's comment gives
//     ("If MaxAttempts is 0, 3 is used"). In Go a zero field is left out,
//     so the zero value of every ...Config is its defaults.
//   - A setting that is given must work as given. [Config.Validate],
//     [Config.Build] and [ParseConfig] refuse one that would be replaced or
//     ignored, with an error wrapping [ErrConfig] that names the setting
//     (and, in a file, its line), what it was, what is accepted and what to
//     write instead. In a file a written 0 is given: "max_attempts: 0"
//     would mean 3, so it is refused; leave the key out.
//   - Two settings have no default, and a [Config] part that is on must
//     give them: rate_limit.rate and queries.cache.ttl.
//
// The constructors ([Retry], [CircuitBreaker], [RateLimiter], [NewCache],
// [Timeout]…) cannot fail on a setting: a value out of range gets what its
// field's comment says, and a rate, TTL or timeout of zero turns the layer
// off. Validate a [Config] to be told instead.
//
// Every decorator type is safe for concurrent use, and the zero value of
// each is usable: see each type's doc.
//
// # Errors
//
// Refusals wrap the sentinels of package cqrs, and the error of the
// library that found them where there is one: [cqrs.ErrValidation]
// (with a [*ValidationError] listing the fields), [cqrs.ErrExecutionTimeout]
// (with [context.DeadlineExceeded]), [cqrs.ErrCircuitOpen] (with
// gobreaker's) and [cqrs.ErrRateLimited]; a bad config wraps [ErrConfig].
// [IsCallerError] and [IsRetryable] classify errors for the breaker, for
// retries and for the level [Logging] logs them at.
//
// # Writing your own
//
// A decorator of your own is an [cqrs.InterceptorFunc], or a type with an
// Intercept method. This one lets only admins send commands:
//
//	authorize := cqrs.InterceptorFunc(func(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
//		if spec.Kind != cqrs.KindCommand {
//			return next // queries are open to all: no cost at all for them
//		}
//		return func(ctx context.Context, c cqrs.Call) error {
//			if !IsAdmin(ctx) {
//				return fmt.Errorf("%s: %w", spec.Name, ErrForbidden)
//			}
//			return next(ctx, c)
//		}
//	})
//
// Decisions that depend only on the message type belong in the outer
// function, which runs once per type; the inner one runs on every
// dispatch.
package middleware
