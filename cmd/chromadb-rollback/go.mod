module github.com/chromadb-rollback/chromadb-rollback/cmd/chromadb-rollback

go 1.26.0

require github.com/chromadb-rollback/chromadb-rollback/pkg v0.0.0

replace github.com/chromadb-rollback/chromadb-rollback/pkg => ../../pkg
